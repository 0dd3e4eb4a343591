"""The cass-pipelines command. One module per group of subcommands; each has `register(sub)`."""
