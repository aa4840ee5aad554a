"""The data store: files, workbooks with sheets, and their records; what the four operations
(``extract``, ``map``, ``delete``, ``export``) act on. ``jobs_plugin.data.api`` is the Python
API; ``jobs_plugin.data.store`` the one module that writes.
"""
