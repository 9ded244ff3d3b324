"""The voice manager (sidecar, init container, ``chorus voices``): verified voices in a volume."""
