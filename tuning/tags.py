"""MLflow tags a search writes on its runs, in one light module: the service reads them without Ray or torch."""

SEARCH_TAG = "attnlab.search"  # parent and trials: the search's name
TRIAL_TAG = "attnlab.trial_id"
INFEASIBLE_TAG = "attnlab.infeasible"  # a trial over the budget: why (it did not train)
STOPPED_EARLY_TAG = "attnlab.stopped_early"  # "true" when ASHA stopped the trial
