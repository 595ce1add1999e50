"""``convlens serve``: the local web app."""
