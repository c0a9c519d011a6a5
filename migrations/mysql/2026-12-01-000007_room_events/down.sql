DROP TABLE room_events;
DROP TABLE rooms;
