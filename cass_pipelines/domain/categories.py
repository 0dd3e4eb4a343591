"""The enums shared by actions, templates, budgets and plans (one source, so they cannot drift)."""
from enum import StrEnum


class Category(StrEnum):
    SYSTEM = "system"
    JOURNAL = "journal"
    MEMORY = "memory"
    RESEARCH = "research"
    REFLECTION = "reflection"
    GROWTH = "growth"
    CURIOSITY = "curiosity"
    CREATIVE = "creative"


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    IDLE = "idle"

    @property
    def rank(self) -> int:
        """Higher is more important; used by the fallback scorer and degradation."""
        return {"critical": 4, "high": 3, "normal": 2, "low": 1, "idle": 0}[self.value]


class ModelTier(StrEnum):
    NONE = "none"
    FAST = "fast"
    DEEP = "deep"


class Reoffer(StrEnum):
    """What a template's unit left waiting is worth once a later unit of the template has completed."""
    OWN = "own"          # its own work (a focus: a question, a growth edge): it waits and is offered again
    LATEST = "latest"    # whatever is pending when it runs (a catch-up): the later unit did it, so it is superseded


class Phase(StrEnum):
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"
    NIGHT = "night"


PHASES: tuple[str, ...] = tuple(p.value for p in Phase)
