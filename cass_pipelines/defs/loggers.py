"""The code location's `console` logger: Dagster's colored text, or JSON lines (CASS_LOG_FORMAT=json)."""
import logging
import sys

import dagster as dg
from dagster._loggers import create_console_logger
from dagster._utils.log import coerce_valid_log_level

from cass_pipelines.services.logs import CassJsonFormatter, json_logs


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO"),
                   "name": dg.Field(str, is_required=False, default_value="dagster")},
    description="Console logger: Dagster's colored text, or one JSON object per line when CASS_LOG_FORMAT=json.")
def cass_console_logger(init_context) -> logging.Logger:
    name, level = init_context.logger_config["name"], coerce_valid_log_level(init_context.logger_config["log_level"])
    if not json_logs():
        return create_console_logger(name=name, level=level)
    log = logging.Logger(name, level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CassJsonFormatter())
    log.addHandler(handler)
    return log
