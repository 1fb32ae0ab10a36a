"""The web dashboard served by ``tether server``: server-rendered pages over the runtime's service functions."""
