"""Turn a transition into a notification: the message fields and the title/body templates."""

from __future__ import annotations

#: The names a channel's `title` and `body` templates may use, as `{job_id}`.
MESSAGE_FIELDS: tuple[str, ...] = (
    "job_id",
    "job_name",
    "display_name",
    "kind",
    "account_id",
    "old_state",
    "new_state",
    "status_code",
    "status_message",
    "base_model",
    "output_model",
    "dataset",
    "created_by",
    "create_time",
    "completed_time",
    "duration",
    "wandb_url",
    "console_url",
    "observed_at",
)
