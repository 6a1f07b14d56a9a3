"""Closed-loop control: goal-reaching with the world model on a robot (docs/CONTROL.md)."""
