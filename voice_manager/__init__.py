"""The voice manager (sidecar, init container and ``chorus voices``): voices into a volume, verified.
