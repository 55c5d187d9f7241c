"""Stand-in for micropython-lib's ssd1306 driver: show() is recorded with the text on screen."""
from machine import note


class SSD1306_I2C:
    def __init__(self, width, height, i2c, addr=0x3C):
        self.lines = []
        note("display", width, height, addr)

    def fill(self, colour):
        self.lines = []

    def text(self, s, x, y):
        self.lines.append(s)

    def show(self):
        note("show", " / ".join(self.lines))
