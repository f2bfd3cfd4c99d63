"""Administration: the jangomail-admin command line and its service layer."""
