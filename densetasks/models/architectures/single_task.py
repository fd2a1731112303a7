"""The single-task baseline (STL): its own encoder, bottleneck and head for one task.

Δm (Lopes et al., WACV 2023; Popovic et al., CVPR 2021) compares every multi-task network
against one of these per task.
"""

from densetasks.errors import ConfigError
from densetasks.models.architectures.hard_sharing import HardSharing


class SingleTask(HardSharing):
    """Hard sharing with exactly one task: nothing is shared, so it is the STL network."""

    @classmethod
    def check_tasks(cls, task_channels: dict[str, int]) -> None:
        if len(task_channels) != 1:
            raise ConfigError(
                "architecture 'single_task' predicts exactly one task, "
                f"got {sorted(task_channels)}; train one single_task model per task "
                "or use a multi-task architecture"
            )
        super().check_tasks(task_channels)
