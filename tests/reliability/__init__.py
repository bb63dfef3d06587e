"""The reliability suite (issue 6): crash/kill resume, non-finite numbers, failing RMs, bad input, load."""
