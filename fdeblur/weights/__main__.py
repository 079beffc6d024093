import sys

from fdeblur.weights.exporter import main

sys.exit(main())
