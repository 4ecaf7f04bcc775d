"""vCard and CSV interchange: export streams, imports with their report, the duplicates of an address book."""
