"""What happens in a training step: the Lightning module, tasks and metrics, mixup, schedules, SWA."""
