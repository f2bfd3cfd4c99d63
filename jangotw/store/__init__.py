"""State stores (SQLite embedded; Redis later) behind the interfaces in jangotw.interfaces."""
