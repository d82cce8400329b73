"""Operations on running workers: control commands (the audit log) and worker status. What a
worker does with a command is the worker's (worker/operations.py).

control.py  the control topic: commands, send_command, ControlFollower
status.py   the status topic: StatusPublisher, read_statuses, blocked_partitions
"""
