"""Schema and forward migrations. `migrate` is idempotent: it applies only versions not yet recorded.

A migration is appended, never edited, once released. JSON columns hold lists/objects as JSON text.
"""
from __future__ import annotations

from cass_pipelines.store.db import Store

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema", """
CREATE TABLE persona (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, voice TEXT NOT NULL, identity JSON NOT NULL,
    "values" JSON NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE growth_edges (
    id TEXT PRIMARY KEY, area TEXT NOT NULL, current_state TEXT NOT NULL, desired_state TEXT NOT NULL,
    weight DOUBLE NOT NULL DEFAULT 0.5, status TEXT NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE growth_observations (
    id TEXT PRIMARY KEY, edge_id TEXT NOT NULL, text TEXT NOT NULL, work_unit_id TEXT,
    offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE open_questions (
    id TEXT PRIMARY KEY, question TEXT NOT NULL, context TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'open', answer TEXT, raised_by TEXT, addressed_by TEXT,
    offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL, answered_at TIMESTAMPTZ);
CREATE TABLE insights (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, text TEXT NOT NULL, work_unit_id TEXT, action_id TEXT,
    offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY, title TEXT, title_generated BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL, last_message_at TIMESTAMPTZ NOT NULL,
    summarized_through_at TIMESTAMPTZ, summarized_through_id TEXT);
CREATE TABLE messages (
    conversation_id TEXT NOT NULL, message_id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, imported_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (conversation_id, message_id));
CREATE TABLE conversation_summaries (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, summary TEXT NOT NULL, topics JSON NOT NULL,
    first_message_at TIMESTAMPTZ NOT NULL, last_message_at TIMESTAMPTZ NOT NULL,
    message_count INTEGER NOT NULL, work_unit_id TEXT, offline BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE journals (
    date DATE NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, tone TEXT NOT NULL DEFAULT '',
    work_unit_id TEXT, offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (date, kind));
CREATE TABLE wiki_notes (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, links JSON NOT NULL DEFAULT '[]',
    work_unit_id TEXT, offline BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE documents (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
    work_unit_id TEXT, offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE research_queue (
    id TEXT PRIMARY KEY, question TEXT NOT NULL, source_question_id TEXT, status TEXT NOT NULL DEFAULT 'queued',
    created_at TIMESTAMPTZ NOT NULL, done_at TIMESTAMPTZ);
CREATE TABLE day_plans (
    date DATE NOT NULL, revision INTEGER NOT NULL, source TEXT NOT NULL, day_intention TEXT NOT NULL,
    planned_from_phase TEXT NOT NULL, plan JSON NOT NULL, dropped JSON NOT NULL, offline BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (date, revision));
CREATE TABLE work_units (
    id TEXT PRIMARY KEY, date DATE NOT NULL, phase TEXT NOT NULL, position INTEGER NOT NULL,
    template_id TEXT NOT NULL, category TEXT NOT NULL, focus TEXT NOT NULL, motivation TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, estimated_cost_usd DOUBLE NOT NULL, origin TEXT NOT NULL,
    deferred_from TEXT, reoffered_as TEXT, plan_revision INTEGER, run_id TEXT, error TEXT,
    created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ);
CREATE TABLE phase_openings (
    date DATE NOT NULL, phase TEXT NOT NULL, plan_revision INTEGER NOT NULL, idle BOOLEAN NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (date, phase));
CREATE TABLE plan_drops (
    date DATE NOT NULL, phase TEXT NOT NULL, template_id TEXT NOT NULL, reason TEXT NOT NULL,
    plan_revision INTEGER, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE action_runs (
    work_unit_id TEXT NOT NULL, position INTEGER NOT NULL, action_id TEXT NOT NULL, status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '', result JSON, error TEXT, cost_usd DOUBLE NOT NULL DEFAULT 0,
    run_id TEXT, step_key TEXT, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    PRIMARY KEY (work_unit_id, position));
CREATE TABLE work_summaries (
    work_unit_id TEXT PRIMARY KEY, date DATE NOT NULL, phase TEXT NOT NULL, template_id TEXT NOT NULL,
    status TEXT NOT NULL, narrative TEXT NOT NULL, key_insights JSON NOT NULL, questions_raised JSON NOT NULL,
    questions_addressed JSON NOT NULL, artifacts JSON NOT NULL, cost_usd DOUBLE NOT NULL,
    offline BOOLEAN NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE llm_ledger (
    request_id TEXT PRIMARY KEY, ts TIMESTAMPTZ NOT NULL, date DATE NOT NULL, phase TEXT,
    run_id TEXT, step_key TEXT, work_unit_id TEXT, action_id TEXT, category TEXT NOT NULL,
    model TEXT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
    cache_creation_input_tokens BIGINT NOT NULL, cache_read_input_tokens BIGINT NOT NULL,
    cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0, cost_usd DOUBLE NOT NULL,
    offline BOOLEAN NOT NULL, attempts INTEGER NOT NULL, latency_ms INTEGER NOT NULL,
    reservation_id TEXT);
CREATE TABLE reservations (
    id TEXT PRIMARY KEY, date DATE NOT NULL, category TEXT NOT NULL, work_unit_id TEXT, action_id TEXT,
    amount_usd DOUBLE NOT NULL, status TEXT NOT NULL, actual_usd DOUBLE, run_id TEXT, pid INTEGER,
    created_at TIMESTAMPTZ NOT NULL, settled_at TIMESTAMPTZ);
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY, date DATE, phase TEXT, work_unit_id TEXT, action_id TEXT, run_id TEXT,
    error TEXT NOT NULL, resolved BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE control_flags (
    scope TEXT PRIMARY KEY, paused BOOLEAN NOT NULL, reason TEXT, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE alerts (
    id TEXT PRIMARY KEY, date DATE NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, UNIQUE (date, kind));
CREATE INDEX ledger_by_date ON llm_ledger(date);
CREATE INDEX units_by_date ON work_units(date, phase);
CREATE INDEX reservations_by_date ON reservations(date, status);
CREATE INDEX messages_by_time ON messages(conversation_id, created_at);
"""),
    (2, "reservations: phase, priority and host (partition checks, stale release by pid)", """
ALTER TABLE reservations ADD COLUMN phase TEXT;
ALTER TABLE reservations ADD COLUMN priority TEXT;
ALTER TABLE reservations ADD COLUMN host TEXT;
CREATE INDEX ledger_by_reservation ON llm_ledger(reservation_id);
"""),
    (3, "reservations: refusal reason (refused requests are kept, status 'refused')", """
ALTER TABLE reservations ADD COLUMN reason TEXT;
"""),
    (4, "exactly once and no poison pills: claims, item failures, dead-letter kinds and states", """
CREATE TABLE claims (
    key TEXT PRIMARY KEY, run_id TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL, state TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ);
CREATE INDEX claims_by_state ON claims(state);
CREATE TABLE item_failures (
    kind TEXT NOT NULL, item_id TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL, last_failed_at TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL, parked BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (kind, item_id));
ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'action';
ALTER TABLE dead_letters ADD COLUMN item_id TEXT;
ALTER TABLE dead_letters ADD COLUMN state TEXT NOT NULL DEFAULT 'open';
ALTER TABLE dead_letters ADD COLUMN note TEXT;
ALTER TABLE dead_letters ADD COLUMN updated_at TIMESTAMPTZ;
UPDATE dead_letters SET state = 'resolved' WHERE resolved;
"""),
    (10, "funding of reservations and ledger rows; reservation, output bound and cached prefix per ledger row", """
ALTER TABLE reservations ADD COLUMN funding TEXT DEFAULT 'category';
ALTER TABLE llm_ledger ADD COLUMN funding TEXT DEFAULT 'category';
ALTER TABLE llm_ledger ADD COLUMN reserved_usd DOUBLE;
ALTER TABLE llm_ledger ADD COLUMN max_tokens INTEGER;
ALTER TABLE llm_ledger ADD COLUMN prefix_key TEXT;
CREATE INDEX ledger_by_prefix ON llm_ledger(prefix_key, ts);
"""),
    (11, "message batches: one row per batched request, its hold and state; batched ledger rows", """
ALTER TABLE llm_ledger ADD COLUMN batch BOOLEAN DEFAULT FALSE;
CREATE TABLE llm_batches (
    custom_id TEXT PRIMARY KEY, request_key TEXT NOT NULL, batch_id TEXT, state TEXT NOT NULL,
    reservation_id TEXT NOT NULL, date DATE NOT NULL, phase TEXT, category TEXT NOT NULL, priority TEXT NOT NULL,
    work_unit_id TEXT, action_id TEXT, run_id TEXT, step_key TEXT, model TEXT NOT NULL, request JSON NOT NULL,
    request_id TEXT, result_text TEXT, error TEXT, used BOOLEAN NOT NULL DEFAULT FALSE, pid INTEGER, host TEXT,
    submitted_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ);
CREATE INDEX batches_by_key ON llm_batches(request_key);
CREATE INDEX batches_by_state ON llm_batches(state);
"""),
    (50, "goals, weekly intentions, goal links of work units, approvals, self-rating of summaries", """
CREATE TABLE goals (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, success_criterion TEXT NOT NULL, source TEXT NOT NULL,
    origin_ref TEXT, templates JSON NOT NULL DEFAULT '[]', status TEXT NOT NULL, close_reason TEXT,
    offline BOOLEAN NOT NULL DEFAULT FALSE, created_on DATE NOT NULL, created_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ);
CREATE TABLE goal_progress (
    id TEXT PRIMARY KEY, goal_id TEXT NOT NULL, work_unit_id TEXT, date DATE NOT NULL, note TEXT NOT NULL,
    offline BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMPTZ NOT NULL, UNIQUE (goal_id, work_unit_id));
CREATE TABLE weekly_intentions (
    week_start DATE PRIMARY KEY, intention TEXT NOT NULL, goal_ids JSON NOT NULL, source TEXT NOT NULL,
    error TEXT, offline BOOLEAN NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE unit_goals (
    work_unit_id TEXT PRIMARY KEY, goal_id TEXT, goal_note TEXT NOT NULL, continues TEXT,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE approvals (
    work_unit_id TEXT PRIMARY KEY, state TEXT NOT NULL, template_id TEXT NOT NULL, action_id TEXT NOT NULL,
    what TEXT NOT NULL, estimated_cost_usd DOUBLE NOT NULL, requested_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL, decided_at TIMESTAMPTZ, decided_by TEXT, reason TEXT, run_id TEXT);
ALTER TABLE work_summaries ADD COLUMN self_rating INTEGER;
CREATE INDEX goal_progress_by_goal ON goal_progress(goal_id, date);
CREATE INDEX approvals_by_state ON approvals(state);
"""),
    (60, "work_units.defer_kind: why a unit waits, as a state next to its reason (resume takes back 'paused')", """
ALTER TABLE work_units ADD COLUMN defer_kind TEXT;
UPDATE work_units SET defer_kind = CASE
    WHEN reason LIKE 'paused:%' OR reason LIKE 'budget: paused:%' OR reason LIKE 'offered again % paused:%'
        THEN 'paused'
    WHEN reason LIKE 'needs approval:%' THEN 'approval'
    WHEN reason LIKE '%already has % units' THEN 'phase_full'
    WHEN reason LIKE '%requires idle%' THEN 'not_idle'
    WHEN reason LIKE '%is no longer in the registry' THEN 'gone'
    ELSE 'budget' END
WHERE status = 'deferred';
"""),
    (70, "work_summaries.awaiting_batch: a summary written without its answer, which waited for its message batch", """
ALTER TABLE work_summaries ADD COLUMN awaiting_batch BOOLEAN DEFAULT FALSE;
"""),
    (80, "work_units.paid_day, paid_phase: the budget day and phase a unit's work run on another day or phase "
         "(approved, retried, caught up) is paid from, kept for its resumes", """
ALTER TABLE work_units ADD COLUMN paid_day DATE;
ALTER TABLE work_units ADD COLUMN paid_phase TEXT;
"""),
    (90, "pauses: every pause's scope, start and lift (look-backs of deferred work skip paused days)", """
CREATE TABLE pauses (scope TEXT NOT NULL, began TIMESTAMPTZ NOT NULL, lifted TIMESTAMPTZ);
INSERT INTO pauses (scope, began) SELECT scope, updated_at FROM control_flags WHERE paused;
"""),
]


LATEST_VERSION = max(version for version, _, _ in MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer cass-pipelines: this code must not read or write it."""

    def __init__(self, path: object, found: int, known: int = LATEST_VERSION):
        super().__init__(f"{path}: database schema version {found} is newer than this cass-pipelines knows "
                         f"(version {known}); upgrade cass-pipelines or use a database of version {known} or older")
        self.found, self.known = found, known


def migrate(store: Store) -> list[int]:
    """Create the schema or bring it forward; returns the versions applied now. A database of a newer
    schema than MIGRATIONS knows is refused (SchemaTooNewError) before anything is written."""
    applied: list[int] = []
    with store.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                     "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version").fetchall()}
        if done and max(done) > LATEST_VERSION:
            raise SchemaTooNewError(store.path, max(done))
        for version, description, sql in MIGRATIONS:
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, now())",
                         [version, description])
            applied.append(version)
    return applied


def current_version(store: Store) -> int:
    """The highest applied migration; 0 for a database that was never migrated."""
    if not store.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' "
                        "AND table_catalog = current_database()"):
        return 0
    return store.scalar("SELECT coalesce(max(version), 0) FROM schema_version") or 0


def bring_forward(store: Store) -> None:
    """A read command's look at the schema: a database of a newer one is refused (SchemaTooNewError); one
    an earlier release made is migrated first (its reads select the current schema's columns)."""
    with store.session():   # one open for the look (and the migration, once)
        if current_version(store) != LATEST_VERSION:
            migrate(store)


def check_version(store: Store) -> None:
    """Refuse a database written by a newer cass-pipelines (read commands, which never migrate)."""
    with store.session():   # its two reads: one open
        found = current_version(store)
    if found > LATEST_VERSION:
        raise SchemaTooNewError(store.path, found)
