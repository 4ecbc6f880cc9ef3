"""One small error tree. Every message says what is wrong and how to fix it, in one line,
so the CLI can print it as it is and the operator can put it in a status condition."""


class RLKDError(Exception):
    """Base of every error rlkd raises on purpose."""


class SpecError(RLKDError):
    """An RLKDJob document is not valid. `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(RLKDError):
    """The artifact store cannot be reached or refused an operation."""


class StoreUnreachableError(StoreError):
    """The store did not answer: connection refused or dropped, timed out, no such host."""


class ObjectNotFoundError(StoreError, KeyError):
    """An object (or the bucket that should hold it) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendError(RLKDError):
    """A GSRM or judge backend is misconfigured or broke its contract (e.g. returned fewer
    results than it was asked for). Failures of the server itself are data (`Failure`), not
    this error."""


class DatasetError(RLKDError):
    """The dataset does not have what the spec says it has (a column, a domain value)."""


class ModelError(RLKDError):
    """A model reference points at no model (or names a toy model that does not exist)."""
