"""Fixtures of the study tests."""
import pytest


@pytest.fixture(autouse=True)
def _terminal_given_back():
    """study.run.main() routes the libraries' logs to the study's driver log for the rest of the
    process (the CLI's); after a test that called it in-process, the next test's logs are its own."""
    yield
    from study.recovery import driver_log

    driver_log.restore()
