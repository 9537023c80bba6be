"""bot: the Discord front end of the style-transfer engine.

`/stylize` and friends (discord.py `app_commands`) validate what a member sends, download and check the images,
hand a job to the queue (`nst_jobs.JobQueue`) and keep the member's reply current until the result is delivered.
It never imports torch: the engine runs in the queue's workers. Start it with `nst-bot` (`bot.cli`).
"""
