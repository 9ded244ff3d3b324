"""The voice manager (sidecar, init container and ``chorus voices``); see issue #4."""
