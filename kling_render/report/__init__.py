"""What people read: the plan and status as text and Markdown, the HTML report, progress."""
