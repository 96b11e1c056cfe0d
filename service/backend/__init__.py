"""The backend seam: ``api`` (protocols + typed results) and the backends behind it."""
