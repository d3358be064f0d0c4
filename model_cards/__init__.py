"""Jinja templates of the model cards hf_soups writes (installed as ``hf_soups.model_cards``)."""
