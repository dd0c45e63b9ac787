from imageimport.cli import app

app()
