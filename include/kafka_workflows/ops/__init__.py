"""Operations on running workers: control commands (the audit log), worker status, and what a
worker does with a command.

control.py  the control topic: commands, send_command, ControlFollower
status.py   the status topic: StatusPublisher, read_statuses, blocked_partitions
apply.py    Operations: skip, unblock, pause, resume inside a worker
deadletters.py  list, inspect and replay dead letters (back to the topic their dead-letter topic belongs to)
"""
