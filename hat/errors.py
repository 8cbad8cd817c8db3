"""The one exception type users see for bad configuration or input."""


class HatConfigError(ValueError):
    """A configuration or input problem, described in user terms (file, key, value, allowed)."""


def where(source: str | None) -> str:
    """Prefix naming the file (or other source) a bad value came from."""
    return f"{source}: " if source else ""


class UnsafeCheckpointError(HatConfigError):
    """A checkpoint whose pickle asks to run something a checkpoint does not need (refused before
    any of it ran)."""

    def __init__(self, path: str, target: str) -> None:
        self.path, self.target = str(path), target
        self.reason = (f"it asks to run {target}, which a checkpoint does not need (nothing of "
                       "it was run); only load files you trust, e.g. HAT's released models from "
                       "their published links")
        super().__init__(f"refused to load {self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.path, self.target)
