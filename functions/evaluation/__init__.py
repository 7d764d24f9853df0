"""Evaluation: queue an answer for AI grading (HTTP), and grade queued answers (SQS worker)."""
