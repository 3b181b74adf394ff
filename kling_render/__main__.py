from kling_render.cli import main

main()
