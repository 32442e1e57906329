import sys

from video_llama.cli.main import main

sys.exit(main())
