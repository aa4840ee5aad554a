"""The workflow library jobs_plugin registers on first use (``settings.workflow_modules``).

``flows.pos``, the seed's "Daily sales report extraction" job, against a simulated POS system
(``flows._posdata``: a SQLite database generated in a folder of your choice):

* ``pos.authenticate``: log in with the POS credentials, check the business day, audit it.
* ``pos.extract-sales``: ``sales.csv`` and ``sales_summary.json``.
* ``pos.extract-payments``: ``payments.csv``, reconciled against the sales.
* ``pos.download-gift-cards``: ``gift_cards.csv``.

``flows.pos.demo_job_spec(pos_dir, output_dir, business_date)`` gives the job to create.
"""
