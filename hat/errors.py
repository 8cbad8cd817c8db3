"""The one exception type users see for bad configuration or input."""


class HatConfigError(ValueError):
    """A configuration or input problem, described in user terms (file, key, value, allowed)."""


def where(source: str | None) -> str:
    """Prefix naming the file (or other source) a bad value came from."""
    return f"{source}: " if source else ""
