"""The web pages (issue 15): server-rendered forms over the same services as the REST API and CardDAV."""
