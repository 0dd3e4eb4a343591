"""dead_letter_retry_job: run a dead letter's work again (launchpad config: dead_letter_id)."""
import dagster as dg

from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.states import RetryStatus
from cass_pipelines.services.retry import retry_dead_letter


class DeadLetterRetryConfig(dg.Config):
    dead_letter_id: str   # from `cass-pipelines dlq list` or the dead_letter_sensor's tick


@dg.op(pool="cass_store")
def retry_dead_letter_op(context: dg.OpExecutionContext, config: DeadLetterRetryConfig,
                         cass: CassResource) -> dg.Output[dict]:
    """Run a dead letter's work again, through the same claims and budget as any run."""
    rt = cass.for_run(context)
    outcome = retry_dead_letter(rt, config.dead_letter_id, cass.clock(), run_id=context.run_id,
                                is_run_over=run_over(context.instance), log=context.log.warning)
    context.log.info(f"dead letter {outcome.dead_letter_id}: {outcome.status.value}: {outcome.message}")
    if outcome.status is RetryStatus.FAILED:
        raise dg.Failure(f"dead letter {outcome.dead_letter_id}: {outcome.message}",
                         metadata={k: v or "" for k, v in outcome.as_dict().items()})
    return dg.Output(outcome.as_dict(), metadata={k: v or "" for k, v in outcome.as_dict().items()})


def build_dead_letter_retry_job() -> dg.JobDefinition:
    @dg.job(name="dead_letter_retry_job", description="Retry one dead letter (launchpad config: dead_letter_id).")
    def dead_letter_retry_job():
        retry_dead_letter_op()

    return dead_letter_retry_job
