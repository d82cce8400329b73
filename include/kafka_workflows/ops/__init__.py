"""Operations on running workers: control commands (the audit log), worker status and dead-letter
replays. What a worker does with a command is the worker's (worker/operations.py).

control.py      the control topic: commands (signed with a control secret), send_command, ControlFollower
status.py       the status topic: StatusPublisher, read_statuses, blocked_partitions
deadletters.py  list, inspect and replay dead letters (back to the topic their dead-letter topic belongs to)
"""
