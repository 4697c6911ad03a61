import datetime


def hello(name: str = "world") -> dict:
    days = (datetime.datetime.now() - datetime.datetime(2000, 1, 1)).days
    print(f"Hello {name}! Number of days since January 1, 2000: {days}")
    return {"greeting": f"Hello {name}!", "days_since_2000": days}
