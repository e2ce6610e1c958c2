"""Small training budgets so the suite stays fast; quality tests set their own."""

QUICK = {"epochs": 20, "grease_steps": 150, "hidden": (64, 64), "batch_size": 512}
