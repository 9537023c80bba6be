"""One cog per feature, each loaded as an extension (`bot.app.initial_extensions`): stylize (the command and the
message menu), styles (saved styles), jobs (/queue, /cancel), results (the buttons under a reply), admin
(/nst-admin). What they share lives in `bot.shared`, not here: discord.py re-executes an extension's module each
time it is loaded."""
