import sys

from fdeblur.weights import main

sys.exit(main())
