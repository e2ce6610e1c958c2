"""Small training budgets so the suite stays fast; quality tests set their own."""

QUICK = {"epochs": 40, "grease_steps": 150, "hidden": (64, 64), "batch_size": 512}

#: The smallest budget that trains, for tests of what does not depend on the map's quality.
TINY = {"epochs": 2, "grease_steps": 20, "hidden": (16,), "batch_size": 512, "densmap": False}
