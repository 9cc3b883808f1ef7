"""Providers: LiteLLM's Router from the config, the offline ``sim`` model, provider errors.

LiteLLM fetches its price map from the network when imported unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set first;
every import of LiteLLM in deja goes through this package, so the guard is set here, once.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
