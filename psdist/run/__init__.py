"""One training's bookkeeping: epoch progress, recovery points, guards, early stopping, history,
metrics, checkpoints, traces and the monitoring events. No torch, no distributed."""
