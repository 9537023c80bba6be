"""One cog per feature: stylize (the command and the message menu), styles (saved styles), jobs (/queue, /cancel),
admin (/nst-admin)."""
