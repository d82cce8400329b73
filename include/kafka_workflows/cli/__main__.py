import sys

from kafka_workflows.cli import main

sys.exit(main())
