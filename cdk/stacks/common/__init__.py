"""Helpers shared by every stack. A change here redeploys every stack that uses it: keep it small."""
