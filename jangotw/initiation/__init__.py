"""Mass email initiation: send to a whole list by mailing the account's initiation mailbox."""
