class Tile:
    def __init__(self, col, row):
        self.col, self.row = col, row

    def key(self):
        return (self.col, self.row)


class NPU1Col4:
    columns = 4


class NPU2:
    columns = 8
