"""One error type whose message always says what to do next."""


class FedopsError(Exception):
    """A problem the user can fix; str() is the whole message, next step included."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  -> {fix}" if fix else problem)
