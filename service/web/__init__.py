"""The service's web page: Jinja templates, CSS and JavaScript shipped in this package (no CDN).

Routes in service/routes/web.py; what each view shows in views.py.
"""
