"""The cluster side of `ASR_BACKEND=ray`: a Ray Serve application serving OpenAI's transcription endpoint.

Ray is imported only inside this package (and only by `python -m bot serve` or Ray itself):
the default install, the bot and the local pool never import it.
"""
