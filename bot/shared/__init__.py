"""What the cogs share, in the order a request flows through it (as RoboDanny's `cogs/utils/`):

- `options`: the /stylize options from the engine's parameter model, checked against the server's limits;
- `attachments`: an attachment's metadata checked, downloaded from the CDN under a byte cap, decoded safely;
- `starter`: the one way a job starts (checks, defer, download, submit, follow the reply); `cancel`: the one way
  it is cancelled;
- `refusals`: how a "no" or an unexpected error reaches the member;
- `render`: the words and bars of a job's reply;
- `buttons`: the buttons under a reply (the `results` cog handles their clicks).

Nothing here is a cog, so these modules are imported once (extensions are re-executed by `load_extension`).
"""
