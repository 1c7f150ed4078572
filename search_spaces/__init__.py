"""Search spaces as data: `SPACES[name]` -> SearchSpace. No Ray, Optuna or torch imports."""
from search_spaces.domains import OBJECTIVE_MODES, Choice, Domain, Float, Int, SearchSpace
from search_spaces.spaces import SPACES

__all__ = ["SPACES", "SearchSpace", "Float", "Int", "Choice", "Domain", "OBJECTIVE_MODES"]
